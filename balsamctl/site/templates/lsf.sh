#!/bin/bash
# BatchJob {{ batch_job.name }} at site {{ site_name }}: {{ batch_job.num_nodes }} node(s), {{ batch_job.wall_time_min }} min,
# queue {{ batch_job.queue }}, project {{ batch_job.project }}. Rendered by balsamctl from the site's job-template.sh.
# Job name, nodes (-nnodes), walltime, queue, project and output file are given on the bsub command line, which
# reads this script from stdin: #BSUB lines added here apply too.
# A rerun pilot would run the BatchJob a second time: LSF must not rerun it.
#BSUB -rn
{% for key, value in optional_params.items() %}
export BALSAM_OPT_{{ key | upper }}={{ value | shquote }}
{% endfor %}
{{ launcher_command }}
