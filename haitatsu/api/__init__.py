"""The REST API (Klein): ``HaitatsuAPI(get_config, store, reloader, reactor).resource()``."""

from haitatsu.api.app import HaitatsuAPI

__all__ = ["HaitatsuAPI"]
