from glob import glob

from setuptools import find_packages, setup

package_name = 'skyloc_sim'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/worlds', glob('worlds/*.wbt')),
        ('share/' + package_name + '/worlds/textures', glob('worlds/textures/*.png')),
        ('share/' + package_name + '/urdf', glob('urdf/*')),
        ('share/' + package_name + '/resource', glob('resource/*.*')),
    ],
    install_requires=['setuptools'],
    extras_require={'test': ['pytest']},
    zip_safe=True,
    maintainer='skyloc developers',
    maintainer_email='dev@skyloc.invalid',
    description=('Built-in simulator (procedural and real-image worlds, multirotor and ground '
                 'robot, camera/IMU/baro/LIDAR), Webots files and the skyloc graph runner.'),
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'sim = skyloc_sim.sim_node:main',
            'demo_pilot = skyloc_sim.demo_pilot:main',
            'player = skyloc_sim.player_node:main',
            'skyloc = skyloc_sim.runner:main',
        ],
    },
)
