#!/usr/bin/env bash
# Bootstrap the ministry CA and the certificates of a ministry node, its control plane's signing
# key, two provinces and their operators. Run once, on an offline machine; copy each node its
# .pem/.key, ca.pem and crl.pem (the ministry node also control.pem/control.key).
# deploy/ministry.toml and deploy/province.toml read them from ./pki (the default directory).
set -euo pipefail
dir=${1:-./pki}
ferry pki init --dir "$dir" --name "Ministry of Transport ferry CA" --days 3650
ferry pki issue --dir "$dir" --dept ministry --role ministry --name ministry --dns ministry --cert "$dir/ministry.pem" --key "$dir/ministry.key"
# Signs policy snapshots, receipts and audit checkpoints; usable only for document signing.
ferry pki issue --dir "$dir" --dept ministry --role control --name "ministry control plane" --cert "$dir/control.pem" --key "$dir/control.key"
for p in guangdong zhejiang; do
  ferry pki issue --dir "$dir" --dept "$p" --role province --name "$p" --dns "$p" --cert "$dir/$p.pem" --key "$dir/$p.key"
  ferry pki issue --dir "$dir" --dept "$p" --role operator --name "$p operator" --cert "$dir/$p-ops.pem" --key "$dir/$p-ops.key"
done
ferry pki issue --dir "$dir" --dept ministry --role operator --name "ministry operator" --cert "$dir/ministry-ops.pem" --key "$dir/ministry-ops.key"
ferry pki list --dir "$dir"
