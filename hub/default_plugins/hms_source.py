from ..hookspecs import hookimpl
from ..sources.hms import HmsSource


@hookimpl
def register_sources(register):
    register(HmsSource())
