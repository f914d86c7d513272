//! placeholder: helper writes the sled log store and state machine here
