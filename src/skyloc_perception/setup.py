from setuptools import find_packages, setup

package_name = 'skyloc_perception'

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
    description=('Camera image to place descriptor: query '
                 'normalisation, ViT/RootSIFT backbones, VLAD, the embedder node.'),
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'embedder = skyloc_perception.embedder_node:main',
            'camera = skyloc_perception.camera_node:main',
            'build_bundle = skyloc_perception.build_bundle:main',
        ],
    },
)
