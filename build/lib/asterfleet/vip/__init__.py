"""The virtual IP shared by the load balancers: keepalived.conf rendering
(keepalived) and the Kamailio health check it runs (health). The network
namespaces the VIP tests run in are harness: :mod:`asterfleet.testing.netns`."""
