#!/bin/bash
# The README's quickstart, on the local lab: 3 "bare servers", a cluster,
# join, deploy the hello service, and curl it through the load balancer.
# Each step is a real swarmlet command; a command that is not built yet says
# "not implemented yet" (exit 2), and this script then stops and says so.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || exit 1
examples/hello/build || exit 1

step() {
  echo
  echo "\$ $*"
  "$@"
  local rc=$?
  if [ $rc -eq 2 ]; then
    echo
    echo "quickstart: not yet - '$*' is not built yet; the quickstart stops here."
    exit 2
  elif [ $rc -ne 0 ]; then
    echo "quickstart: '$*' failed (exit $rc)" >&2
    exit $rc
  fi
}

step swarmlet lab up --nodes 3
mapfile -t targets < <(swarmlet lab ls -o json | python3 -c 'import json,sys; [print(n["ssh"]) for n in json.load(sys.stdin)]')
key=$(swarmlet lab ls -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["key"])')
home=${SWARMLET_HOME:-$HOME/.swarmlet}
if [ -f "$home/cluster.json" ]; then
  echo; echo "quickstart: a cluster exists in $home; reusing it (swarmlet init --force starts over)"
  swarmlet master status >/dev/null 2>&1 || step swarmlet master start
else
  step swarmlet init --name quickstart
fi
step swarmlet join -i "$key" --accept-new-host-key "${targets[@]}"
step swarmlet nodes
step swarmlet deploy --push -f examples/hello/stack.yml
step swarmlet ps web

echo
echo "\$ curl http://127.0.0.1:8080/   (through swarmlet's load balancer, 6 times)"
ok=0
for i in $(seq 1 60); do
  if curl -fsS --max-time 2 http://127.0.0.1:8080/ >/dev/null 2>&1; then ok=1; break; fi
  sleep 1
done
if [ $ok -ne 1 ]; then echo "quickstart: the service did not answer through the load balancer in 60 s" >&2; exit 1; fi
for i in 1 2 3 4 5 6; do curl -fsS --max-time 2 http://127.0.0.1:8080/; done
echo
echo "quickstart: done. Try: swarmlet update web --push --image swarmlet-hello:2   (or :broken, which rolls back by itself)"
echo "Clean up with: swarmlet rm web; swarmlet master stop; swarmlet lab down"
