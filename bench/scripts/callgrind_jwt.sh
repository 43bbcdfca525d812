#!/usr/bin/env bash
# Instructions per call of GetOrganization with an API key against the same
# call with a JWT of the same service account, both as
# `authorization: Bearer …` (as `tollgate-bench oauth` sends them), each
# under valgrind's callgrind (see callgrind.sh for why instructions).
# usage: callgrind_jwt.sh NAME BIN [CALLS]
# Writes /tmp/callgrind/NAME/{key,jwt}.cg.1; read them with
# callgrind_annotate. The organization, account, client, key and token
# are made first on the same database by the binary running normally.
set -uo pipefail
NAME=$1; BIN=$2; N=${3:-10000}
T=/tmp/callgrind/$NAME; rm -rf "$T"; mkdir -p "$T"
python3 "$(dirname "$0")/grpc_body.py" "$T/body"
SERVE=(serve --listen 127.0.0.1:7101 --admin-listen 127.0.0.1:7102 --database-url "sqlite://$T/t.db"
  --bootstrap-key-file "$T/key" --key-encryption-key-file "$T/kek" --log-level info)
U=http://127.0.0.1:7101
head -c 32 /dev/urandom | base64 > "$T/kek"; chmod 600 "$T/kek"

"$BIN" "${SERVE[@]}" > "$T/setup.log" 2>&1 & PID=$!
for _ in $(seq 100); do [[ -s $T/key ]] && curl -s -o /dev/null "$U/" && break; sleep 0.2; done
J=(-sf -H "x-api-key: $(cat "$T/key")" -H content-type:application/json)
curl "${J[@]}" -X POST "$U/v1/organizations?organization_id=oauth-bench" -d '{"display_name":"OAuth bench"}' > /dev/null
curl "${J[@]}" -X POST "$U/v1/organizations/oauth-bench/serviceAccounts?service_account_id=bench" \
  -d '{"display_name":"bench","roles":["viewer"]}' > /dev/null
SECRET=$(curl "${J[@]}" -X POST "$U/v1/organizations/oauth-bench/clients?oauth_client_id=bench" \
  -d '{"display_name":"bench","client_type":"CONFIDENTIAL","grant_types":["client_credentials"],"scopes":["organizations.get"],"service_account":"organizations/oauth-bench/serviceAccounts/bench"}' \
  | python3 -c 'import sys, json; print(json.load(sys.stdin)["secret"])')
KEY=$(curl "${J[@]}" -X POST "$U/v1/organizations/oauth-bench/serviceAccounts/bench/apiKeys" -d '{}' \
  | python3 -c 'import sys, json; print(json.load(sys.stdin)["secret"])')
ENC=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$SECRET")
TOKEN=$(curl -sf -u "organizations%2Foauth-bench%2Fclients%2Fbench:$ENC" -d grant_type=client_credentials "$U/oauth2/token" \
  | python3 -c 'import sys, json; print(json.load(sys.stdin)["access_token"])')
kill $PID; wait $PID 2>/dev/null
echo "API key: ${#KEY} bytes, JWT: ${#TOKEN} bytes"

run() { # TAG CREDENTIAL
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$T/$1.cg" "$BIN" "${SERVE[@]}" > "$T/$1.log" 2>&1 & PID=$!
  for _ in $(seq 600); do curl -s -o /dev/null "$U/" && break; sleep 0.2; done; sleep 3
  local H=(-H content-type:application/grpc -H te:trailers -H "authorization: Bearer $2")
  local URL=$U/tollgate.v1.OrganizationService/GetOrganization
  h2load -c 4 -m 8 -t 1 -n 2000 -d "$T/body" "${H[@]}" "$URL" > "$T/$1.warm"
  callgrind_control -i on $PID > /dev/null
  h2load -c 4 -m 8 -t 1 -n "$N" -d "$T/body" "${H[@]}" "$URL" > "$T/$1.h2load"
  callgrind_control -d $PID > /dev/null
  kill $PID; wait $PID 2>/dev/null
  grep -E "^requests:" "$T/$1.h2load"
  local total
  total=$(callgrind_annotate --auto=no "$T/$1.cg.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  echo "$NAME $1: $(( total / N )) instructions per call ($T/$1.cg.1)"
}
run key "$KEY"
run jwt "$TOKEN"
