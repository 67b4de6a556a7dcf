"""The site agent: reconcilers for manifests, Jobs and BatchJobs, and the loop that runs them."""
