"""The site layer: a site directory and its settings, the registry of sites, platform presets and job templates,
``apply``, and where a Job's workdir and output files go. The controller, the launcher, the CLI and the Balsam API
stand on it; it imports none of them."""
