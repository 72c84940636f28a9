#!/usr/bin/env bash
# Installs the real servers the end-to-end tests start (each test spawns its
# own instance on a free 127.0.0.1 port; nothing is left running):
#   mosquitto                  MQTT broker            (analyzer e2e)
#   postgresql                 PostgreSQL server      (analyzer e2e)
#   prometheus                 Prometheus server      (GPU usage source)
#   prometheus-node-exporter   textfile collector     (GPU metrics for the above)
#   openssl                    makes the CA for the analyzer's MQTT-over-TLS test
#   fonts-dejavu-core          text on annotated images (and in the browser tests)
#   chromium, chromium-driver  headless browser + WebDriver (dashboard browser tests)
# Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)

if [ ${#need[@]} -eq 0 ]; then
  echo "ci-services: mosquitto, postgresql, prometheus, prometheus-node-exporter, openssl, fonts, chromium present"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "ci-services: installing ${need[*]}"
# Packages must not start their system services here (no init system in CI
# containers, and the tests start their own instances).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "ci-services: installed ${need[*]}"
