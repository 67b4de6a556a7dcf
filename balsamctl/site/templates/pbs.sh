#!/bin/bash
# BatchJob {{ batch_job.name }} at site {{ site_name }}: {{ batch_job.num_nodes }} node(s), {{ batch_job.wall_time_min }} min,
# queue {{ batch_job.queue }}, project {{ batch_job.project }}. Rendered by balsamctl from the site's job-template.sh.
# Job name, nodes (-l select), walltime, queue, project and output file are given on the qsub command line.
# One chunk per node: the launcher takes the allocation's nodes from $PBS_NODEFILE.
#PBS -l place=scatter
# A rerun pilot would run the BatchJob a second time: PBS must not rerun it.
#PBS -r n
{% for key, value in optional_params.items() %}
export BALSAM_OPT_{{ key | upper }}={{ value | shquote }}
{% endfor %}
{{ launcher_command }}
