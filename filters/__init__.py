"""Built-in filter plugins, installed as ``haitatsu.filters``.

Each module here is written exactly like a third-party plugin dropped into the operator's plugin
directory: it defines objects providing ``IFilterFactory`` that ``twisted.plugin.getPlugins`` finds.
"""
