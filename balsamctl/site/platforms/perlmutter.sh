#!/bin/bash
# BatchJob {{ batch_job.name }} at site {{ site_name }}: {{ batch_job.num_nodes }} node(s), {{ batch_job.wall_time_min }} min,
# queue {{ batch_job.queue }}, project {{ batch_job.project }}. Rendered by balsamctl from the site's job-template.sh
# (platform preset: perlmutter).
# Job name, nodes, time, partition, account and output file are given on the sbatch command line.
# GPU nodes, all 4 GPUs of each (the launcher counts them from SLURM_GPUS_ON_NODE).
#SBATCH -C gpu
#SBATCH --gpus-per-node=4
# At NERSC the queue is the QOS: the BatchJob's queue, unless the qos optional param names another.
#SBATCH --qos={{ (optional_params.get("qos", "") or batch_job.queue) | shquote }}
# A requeued pilot would run the BatchJob a second time: let a node failure end it (NODE_FAIL) instead.
#SBATCH --no-requeue
{% for key, value in optional_params.items() %}
export BALSAM_OPT_{{ key | upper }}={{ value | shquote }}
{% endfor %}
{{ launcher_command }}
