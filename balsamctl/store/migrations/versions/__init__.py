"""Revision files, ``NNNN_slug.py`` (revision id ``NNNN``), one after the other."""
