"""The pilot job: node resources, placement, and the two job modes (mpi, serial) run inside an allocation."""
