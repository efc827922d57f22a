#!/bin/sh
# One-shot topic creation for the docker compose stack (service `kafka-init`, apache/kafka image).
# Creates riskmon's topics before any worker starts: the Faust table changelogs must have as many
# partitions as the source topics, so the partition counts are fixed here, not by auto-creation.
# Idempotent (--if-not-exists). Env: BOOTSTRAP (kafka:19092), PARTITIONS (8), REPLICATION (1).
set -eu

BOOTSTRAP="${BOOTSTRAP:-kafka:19092}"
PARTITIONS="${PARTITIONS:-8}"
REPLICATION="${REPLICATION:-1}"
TOPICS_SH=/opt/kafka/bin/kafka-topics.sh

create() {  # name partitions [extra args...]
    name="$1"; partitions="$2"; shift 2
    "$TOPICS_SH" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$name" --partitions "$partitions" --replication-factor "$REPLICATION" "$@"
}

# keyed inputs (>= 4 partitions): account-keyed topics carry the consumer-group parallelism
create riskmon.prices "$PARTITIONS"                        # key instrument
create riskmon.positions "$PARTITIONS"                     # key account
create riskmon.balances "$PARTITIONS"                      # key account
create riskmon.insurance-fund 4                            # key fund
create riskmon.instruments 4 --config cleanup.policy=compact   # key instrument, latest wins
# outputs
create riskmon.risk-events "$PARTITIONS"                   # key account
create riskmon.dead-letters 4                              # key = original key
# internal: per-partition fund partials, read by the one combining agent
create riskmon.partials 1

"$TOPICS_SH" --bootstrap-server "$BOOTSTRAP" --list
