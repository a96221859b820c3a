#ifndef SPAWNGATE_CSODIUM_SHIM_H
#define SPAWNGATE_CSODIUM_SHIM_H
#include <sodium.h>
#endif
