from setuptools import find_packages, setup

package_name = 'skyloc_localization'

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
    description=('Tile database, retrieval, probability map, IMU/baro '
                 'Kalman filter and the localizer node.'),
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'localizer = skyloc_localization.localizer_node:main',
            'health = skyloc_localization.health_node:main',
            'mavros_bridge = skyloc_localization.mavros_bridge_node:main',
        ],
    },
)
