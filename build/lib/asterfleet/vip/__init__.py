"""The virtual IP shared by the load balancers: keepalived.conf rendering
(keepalived), the Kamailio health check it runs (health), and network
namespace helpers for the tests and the lab (netns)."""
