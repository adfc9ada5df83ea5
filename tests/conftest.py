"""Settings shared by the whole suite."""

from hypothesis import settings

# Property tests check behaviour, not speed: a per-example deadline turns a
# busy machine into a failure. Speed is measured by the scripts in bench/.
settings.register_profile("asterfleet", deadline=None)
settings.load_profile("asterfleet")
