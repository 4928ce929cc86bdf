"""Export real + synthetic cases in the on-disk layouts other trainers read (nnU-Net v2 raw)."""

from .nnunet import ExportSummary, export_nnunet

__all__ = ["ExportSummary", "export_nnunet"]
