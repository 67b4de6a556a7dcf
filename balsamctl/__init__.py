"""balsamctl: declarative, Kubernetes-style control of HPC pilot jobs."""

__version__ = "0.1.0"
