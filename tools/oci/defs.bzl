"""Container images for churn-mlops, built offline by Bazel.

Public API, shaped like rules_oci's (oci_image / oci_push / oci_load, same attribute names and
`<name>.digest` target) so that a later swap is mechanical. rules_oci itself is not used because
Debian does not package it and it downloads crane/jq toolchains from the internet (impossible
offline). Layers: deb_layer (Python runtime from pinned .debs) and py_image_layers (a py_binary's
third-party and app layers).
"""

load("//tools/oci/private:image.bzl", _oci_image = "oci_image", _oci_load = "oci_load", _oci_push = "oci_push")
load("//tools/oci/private:layers.bzl", _OciLayerInfo = "OciLayerInfo", _deb_layer = "deb_layer", _py_image_layers = "py_image_layers")

oci_image = _oci_image
oci_push = _oci_push
oci_load = _oci_load
deb_layer = _deb_layer
py_image_layers = _py_image_layers
OciLayerInfo = _OciLayerInfo
