"""Panel dashboards (installed as ``workbench.dashboards``): one page per module, each with its state in a
`param.Parameterized` model that a notebook can drive and show without a server.

    from workbench.dashboards import AtlasModel, atlas_view
    model = AtlasModel(runs_dir="runs")
    atlas_view(model)                         # in JupyterLab, after pn.extension()

`serve` starts every page in one app (what `workbench serve` runs); each `*_page` builds one page.
"""

from workbench.kernels.lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "workbench.dashboards.app": ["pages", "serve"],
    "workbench.dashboards.home": ["home_page"],
    "workbench.dashboards.runs": ["RunsModel", "runs_page"],
    "workbench.dashboards.search": ["SearchModel", "search_page"],
    "workbench.dashboards.lab": ["LabModel", "frame_view", "param_editor", "score_trace", "lab_page"],
    "workbench.dashboards.atlas": ["AtlasModel", "atlas_view", "atlas_page"],
    "workbench.dashboards.merge": ["MergeModel", "merge_page"],
    "workbench.dashboards.qd": ["QDModel", "read_source", "views_panel", "qd_page"],
    "workbench.dashboards.namm": ["NAMMExplorer", "namm_page"],
    "workbench.dashboards.experts": ["ExpertsModel", "VIEWS", "experts_page"],
})
