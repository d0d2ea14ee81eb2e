"""Built-in simulator (procedural and real-image worlds, multirotor and ground robot,
camera/IMU/baro/LIDAR), Webots files and the skyloc graph runner."""
