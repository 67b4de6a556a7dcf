#!/bin/bash
# BatchJob {{ batch_job.name }} at site {{ site_name }}: {{ batch_job.num_nodes }} node(s), {{ batch_job.wall_time_min }} min,
# queue {{ batch_job.queue }}, project {{ batch_job.project }}. Rendered by balsamctl from the site's job-template.sh
# (platform preset: polaris).
# Job name, nodes (-l select), walltime, queue, project and output file are given on the qsub command line.
# One chunk per node: the launcher takes the allocation's nodes from $PBS_NODEFILE.
#PBS -l place=scatter
# A rerun pilot would run the BatchJob a second time: PBS must not rerun it.
#PBS -r n
# Polaris refuses jobs that do not name the filesystems they use.
#PBS -l filesystems={{ optional_params.get("filesystems", "home:eagle") | shquote }}
{% for key, value in optional_params.items() %}
export BALSAM_OPT_{{ key | upper }}={{ value | shquote }}
{% endfor %}
{% set mig_count = optional_params.get("mig_count", "0") %}
{% if mig_count not in ("", "0") %}
{# A100 MIG profiles for an even split of one GPU: 2 x 3g.20gb, 3 x 2g.10gb or 7 x 1g.5gb. Another count is a
   template error naming the accepted ones (StrictUndefined), so the BatchJob fails before it is submitted. #}
{% set mig_profile = {"2": "3g.20gb", "3": "2g.10gb", "7": "1g.5gb"}.get(mig_count) or mig_count_must_be_0_2_3_or_7 %}
# MIG: before the launcher starts, split EVERY GPU of EVERY node into {{ mig_count }} instances ({{ mig_profile }} each),
# one process per node. Each node records its MIG UUIDs in $BALSAM_MIG_DIR/<hostname>; this node's are exported as
# BALSAM_GPU_IDS (comma-separated) for the launcher.
BALSAM_MIG_COUNT={{ mig_count | shquote }}
BALSAM_MIG_PROFILE={{ mig_profile | shquote }}
export BALSAM_MIG_DIR={{ (site_path ~ "/qsubmit/" ~ batch_job.name ~ ".mig") | shquote }}
BALSAM_MIG_SETUP=$(cat <<'MIG'
set -eu
count=$1 profile=$2 dir=$3
host=$(hostname)
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader)
for gpu in $gpus; do
    nvidia-smi -i "$gpu" -mig 1 >/dev/null
    nvidia-smi mig -i "$gpu" -dci >/dev/null 2>&1 || true
    nvidia-smi mig -i "$gpu" -dgi >/dev/null 2>&1 || true
    for _ in $(seq "$count"); do
        nvidia-smi mig -i "$gpu" -cgi "$profile" -C >/dev/null
    done
done
uuids=$(nvidia-smi -L | sed -n 's/.*(UUID: \(MIG-[^)]*\)).*/\1/p')
expected=$(( $(echo $gpus | wc -w) * count ))
found=$(echo $uuids | wc -w)
if [ "$found" -ne "$expected" ]; then
    echo "$host: expected $expected MIG instances, found $found" >&2
    exit 1
fi
echo $uuids | tr ' ' ',' > "$dir/$host"
MIG
)
mkdir -p "$BALSAM_MIG_DIR"
NNODES=$(sort -u "$PBS_NODEFILE" | wc -l)
if ! mpiexec -n "$NNODES" --ppn 1 bash -c "$BALSAM_MIG_SETUP" balsam-mig-setup \
        "$BALSAM_MIG_COUNT" "$BALSAM_MIG_PROFILE" "$BALSAM_MIG_DIR"; then
    echo "balsamctl: MIG setup failed on at least one node; not starting the launcher" >&2
    exit 1
fi
BALSAM_GPU_IDS=$(cat "$BALSAM_MIG_DIR/$(hostname)")
export BALSAM_GPU_IDS
{% endif %}
{{ launcher_command }}
