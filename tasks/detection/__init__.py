"""FPN Faster R-CNN (torchvision's detector) on our backbones, COCO data and COCO evaluation.

Modules, one job each: `model` (FPN adapter, builder, torchvision weight loading), `build` (config ->
keyword arguments, norm policy), `validation` (range checks of the config), `data_check` (validation
and fail/clip/drop policies), `classes` (a checkpoint's label order against the data's), `dataset`,
`transforms` (albumentations), `sampler` (aspect-ratio grouping), `voc` (VOC XML -> COCO), `evaluation`
(pycocotools COCOeval), `visualize`, `predict`, `task` (what the shared Trainer calls), `config`.
Submodules are imported explicitly so that importing one does not pull in the others' dependencies.
"""
