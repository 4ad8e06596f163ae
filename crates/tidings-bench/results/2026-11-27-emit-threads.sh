#!/bin/bash
# 7 runs; each run tries every build at 1, 2, 4, 8 threads, the order of builds rotating.
builds=(before mid after)
uptime
for r in 0 1 2 3 4 5 6; do
  for t in 1 2 4 8; do
    for k in 0 1 2; do
      b=${builds[$(( (r + k) % 3 ))]}
      n=$(( 800000 / t ))
      echo "$r $t $b $(/tmp/et-$b $t $n)"
    done
  done
done
uptime
