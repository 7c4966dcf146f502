"""The Qt-free engine of simviewer: decoding, embedding, catalog, index, libraries."""
