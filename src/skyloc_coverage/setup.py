from setuptools import find_packages, setup

package_name = 'skyloc_coverage'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    extras_require={'test': ['pytest']},
    zip_safe=True,
    maintainer='skyloc developers',
    maintainer_email='dev@skyloc.invalid',
    description=('LIDAR occupancy mapping, boustrophedon coverage '
                 'planning, replanning and path following.'),
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'map_handler = skyloc_coverage.map_handler_node:main',
            'coverage = skyloc_coverage.coverage_node:main',
            'follower = skyloc_coverage.follower_node:main',
            'mission = skyloc_coverage.mission_node:main',
        ],
    },
)
