#!/usr/bin/env bash
# Bootstrap the ministry CA and the certificates of a ministry node, two provinces and their
# operators. Run once, on an offline machine; copy each node its .pem/.key, ca.pem and crl.pem.
set -euo pipefail
dir=${1:-./pki}
ferry pki init --dir "$dir" --name "Ministry of Transport ferry CA" --days 3650
ferry pki issue --dir "$dir" --dept ministry --role ministry --name ministry --dns ministry --cert "$dir/ministry.pem" --key "$dir/ministry.key"
for p in guangdong zhejiang; do
  ferry pki issue --dir "$dir" --dept "$p" --role province --name "$p" --dns "$p" --cert "$dir/$p.pem" --key "$dir/$p.key"
  ferry pki issue --dir "$dir" --dept "$p" --role operator --name "$p operator" --cert "$dir/$p-ops.pem" --key "$dir/$p-ops.key"
done
ferry pki issue --dir "$dir" --dept ministry --role operator --name "ministry operator" --cert "$dir/ministry-ops.pem" --key "$dir/ministry-ops.key"
ferry pki list --dir "$dir"
