"""Built-in update methods, one subpackage each.

Each subpackage's ``__init__`` registers one `editors.registry.MethodSpec` and
must not import torch: it names its pydantic config (``config.py``) and a
`load` that imports the method itself (``method.py``) on first use. Adding a
method is adding a folder here (or, outside this repository, an entry point in
the group ``govern.methods``).
"""
