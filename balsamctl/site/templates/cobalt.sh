#!/bin/bash
# BatchJob {{ batch_job.name }} at site {{ site_name }}: {{ batch_job.num_nodes }} node(s), {{ batch_job.wall_time_min }} min,
# queue {{ batch_job.queue }}, project {{ batch_job.project }}. Rendered by balsamctl from the site's job-template.sh.
# Job name, nodes, walltime, queue, project and output prefix are given on the qsub command line; the script runs
# on a MOM node, from which aprun reaches the compute nodes.
# Let MPI applications that fork and handle signals (mpi4py) run under Cray MPICH.
export PMI_NO_FORK=1
{% for key, value in optional_params.items() %}
export BALSAM_OPT_{{ key | upper }}={{ value | shquote }}
{% endfor %}
{% if optional_params.get("singularity_prime_cache") == "yes" %}
# Prime the LDAP cache on every node at once, before many containers start and look the user up together.
aprun -n "$COBALT_JOBSIZE" -N 1 /soft/tools/prime-cache
sleep 10
{% endif %}
{{ launcher_command }}
