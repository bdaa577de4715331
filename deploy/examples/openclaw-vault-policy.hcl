# Read access to OpenClaw's keys (KV v2 at secret/), for the Vault role the pods log in as.
path "secret/data/openclaw" {
  capabilities = ["read"]
}
