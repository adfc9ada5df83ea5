"""etcd membership tools: run members (server), read a cluster (cluster),
diagnose it (doctor), repair a member (rejoin), bootstrap from a token
(discovery)."""
