"""U-Net segmentation on our ResNet backbone (issue 5).

Modules, one job each: ``smp_parts`` (every segmentation-models-pytorch import: encoder adapter,
decoder, head, losses), ``model`` (UNet, build_unet), ``inference`` (padding, sliding window, logits ->
labels), ``metrics`` (Dice/IoU/precision/recall/HD95 per image and case), ``image_io`` / ``manifest`` /
``nifti`` / ``data`` / ``transforms`` (reading, validation, splits, augmentation), ``validation``
(range checks of the config), ``classes`` (a checkpoint's classes against the data's), ``task``
(SegmentationTask for the shared Trainer), ``predict`` and ``overlay`` (outputs).
"""
