"""The registry side of the image factory: asterfleet is the token server of
the CNCF Distribution registry, writes its configuration and signing
material, and keeps a browsable catalogue of repositories and tags."""
