#!/bin/bash
# BatchJob {{ batch_job.name }} at site {{ site_name }}: {{ batch_job.num_nodes }} node(s), {{ batch_job.wall_time_min }} min,
# queue {{ batch_job.queue }}, project {{ batch_job.project }}. Rendered by balsamctl from the site's job-template.sh.
# Job name, nodes, time, partition, account and output file are given on the sbatch command line.
# A requeued pilot would run the BatchJob a second time: let a node failure end it (NODE_FAIL) instead.
#SBATCH --no-requeue
# Whole nodes: the launcher counts each node's CPUs and GPUs as its own and places Jobs on them (on a cluster that
# shares nodes, -N alone gets one CPU of each node, too few for a Job with several ranks on a node).
#SBATCH --exclusive
{% for key, value in optional_params.items() %}
export BALSAM_OPT_{{ key | upper }}={{ value | shquote }}
{% endfor %}
{{ launcher_command }}
