"""The image factory: knots (build definitions), triggers, a persistent build
queue shared by workers, builders (buildah, docker CLI), image tests and
post-success hooks."""
