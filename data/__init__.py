"""Small assets shipped with the package (installed as ``workbench.data``)."""
