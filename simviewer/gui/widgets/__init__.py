"""Widgets the window and its tabs are built from: model picker, compare view, indexing status."""
