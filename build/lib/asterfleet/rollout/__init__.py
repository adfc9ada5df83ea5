"""Rolling upgrades: a rollout in etcd, driven one node at a time by a
level-triggered controller (drain, wait idle, replace, gate, undrain)."""
