"""The release watcher: notices new Asterisk releases and proposes them to
the image repository (a pull/merge request, or a push to a branch)."""
