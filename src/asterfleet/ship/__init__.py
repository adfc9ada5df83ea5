"""Shipping asterfleet: its OCI images and the podman settings that build and run them."""
