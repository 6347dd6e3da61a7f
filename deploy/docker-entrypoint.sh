#!/bin/sh
# Runs `gridwatch "$@"`. When GRIDWATCH_MQTT_ACCOUNT names a service account (gridwatch-bridge,
# gridwatch-worker, gridwatch-operator, gridwatch-simulator) and GRIDWATCH_MQTT_URL is not set, the MQTT
# URL is built with that account's password, derived from the master secret the broker's password file
# was made from (GRIDWATCH_MQTT_SECRET or GRIDWATCH_MQTT_SECRET_FILE): no password is stored anywhere.
set -eu
if [ -n "${GRIDWATCH_MQTT_ACCOUNT:-}" ] && [ -z "${GRIDWATCH_MQTT_URL:-}" ]; then
  pw="$(gridwatch mqtt-credentials --show "service:${GRIDWATCH_MQTT_ACCOUNT}")"
  GRIDWATCH_MQTT_URL="mqtt://${GRIDWATCH_MQTT_ACCOUNT}:${pw}@${GRIDWATCH_MQTT_HOST:-mosquitto}:${GRIDWATCH_MQTT_PORT:-1883}"
  export GRIDWATCH_MQTT_URL
fi
exec gridwatch "$@"
