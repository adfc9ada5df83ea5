"""SIPp peers: packaged scenarios and runners for UAS (box) and UAC (load) roles."""
