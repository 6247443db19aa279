"""What a workdir holds that both training and evaluation read.

`export`: the exported backbone (backbone.keras, saved_model/, head.keras,
info.json), written by training and `bin/import_tf1`, read by evaluation
and `selfsup.Representation`. `sources`: the gin-configurable data source
(`build_source`) and the record of it a workdir keeps (`data.json`).
"""
from selfsup.workdir import export, sources
from selfsup.workdir.export import load_backbone, load_info, write_export
from selfsup.workdir.sources import build_source, make_source, source_record

__all__ = ["build_source", "export", "load_backbone", "load_info",
           "make_source", "source_record", "sources", "write_export"]
