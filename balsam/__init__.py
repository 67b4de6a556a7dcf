"""Balsam's Python API on a balsamctl store: ``from balsam.api import App, BatchJob, Job, Site``."""
