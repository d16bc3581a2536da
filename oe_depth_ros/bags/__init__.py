"""rosbag2 tools without a ROS installation: KITTI raw to bag, and offline depth over a bag."""
