"""A synthetic street world written in the KITTI raw layout (``dataset.generate_dataset``).

It builds on the KITTI reader (``oe_depth_ros.kitti``) for formats and calibration;
the reader never imports it.
"""
