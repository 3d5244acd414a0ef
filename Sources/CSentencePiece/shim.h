// libsentencepiece is a C++ library; Swift reaches it through CShims' extern "C" functions.
// This module exists to link it (and to tell SwiftPM which apt package provides it).
