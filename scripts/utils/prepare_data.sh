#!/bin/bash
# Pack ImageNet (data/ImageNet/<class>/*.JPEG) into data/ILSVRC128.hdf5 and compute its Inception
# moments for FID.
python make_hdf5.py --dataset I128 --batch_size 256 --data_root data
python calculate_inception_moments.py --dataset I128_hdf5 --data_root data
