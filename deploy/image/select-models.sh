#!/bin/sh
# Used by the Dockerfile: copy the repository models an image carries.
#   select-models.sh SOURCE TARGET [NAMES]
# NAMES is comma or space separated; empty or "all" means every model under SOURCE.
# A name with no folder under SOURCE stops the build and says which names there are.
set -eu
source_dir="$1"
target_dir="$2"
names="$(echo "${3:-}" | tr ',' ' ')"
mkdir -p "$target_dir"
if [ -z "$(echo "$names" | tr -d ' ')" ] || [ "$names" = "all" ]; then
  cp -a "$source_dir"/. "$target_dir"/
else
  for name in $names; do
    if [ ! -d "$source_dir/$name" ]; then
      echo "MODELS: there is no model '$name' in models/ (there are: $(ls "$source_dir" | tr '\n' ' '))" >&2
      exit 1
    fi
    cp -a "$source_dir/$name" "$target_dir/"
  done
fi
# Pictures in the version folders (training curves, confusion matrices) are for people
# reading the repository; the server needs model.onnx and card.json.
find "$target_dir" -type f -name '*.png' -delete
echo "models in the image: $(ls "$target_dir" | tr '\n' ' ')"
