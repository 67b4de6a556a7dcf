"""The pilot job: node resources, placement, and the two job modes (mpi, serial) run inside an allocation."""

if __name__ != "balsamctl.launcher":  # the folder is also importable from the repository root: refuse a 2nd copy
    raise ImportError(f"import balsamctl.launcher, not {__name__}: one package, one copy of each class")
