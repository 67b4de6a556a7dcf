"""The site agent: reconcilers for manifests, Jobs and BatchJobs, and the loop that runs them."""

if __name__ != "balsamctl.controller":  # the folder is also importable from the repository root: refuse a 2nd copy
    raise ImportError(f"import balsamctl.controller, not {__name__}: one package, one copy of each class")
